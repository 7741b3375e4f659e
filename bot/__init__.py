"""Chat front-ends (Telegram, Discord) over the shared engine. No torch/open_clip here."""
