"""The search engine shared by all bots: decode, embed, index, rank. No chat libraries here."""
