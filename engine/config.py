"""Settings: `config.toml` defaults, an optional other file, then environment overrides.

Every key can be overridden by `FASHIONBOT_<SECTION>__<KEY>` (upper case). Values are
validated once at start-up; a bad value stops the program with a message naming the key.
Bot tokens are deliberately not settings: they come from the environment only.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "FASHIONBOT_"
CONFIG_ENV = "FASHIONBOT_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names the key."""


def _check(predicate: Callable[[Any], bool], requirement: str) -> dict[str, Any]:
    return {"check": (predicate, requirement)}


def _positive() -> dict[str, Any]:
    return _check(lambda v: v > 0, "must be greater than 0")


def _non_negative() -> dict[str, Any]:
    return _check(lambda v: v >= 0, "must be 0 or more")


def _one_of(*choices: str) -> dict[str, Any]:
    return _check(lambda v: v in choices, f"must be one of {', '.join(choices)}")


def _unit_interval() -> dict[str, Any]:
    return _check(lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")


@dataclass(frozen=True)
class ModelSettings:
    name: str = "marqo-fashionclip"
    pretrained: str = ""
    device: str = "auto"
    threads: int = field(default=0, metadata=_non_negative())
    max_batch: int = field(default=16, metadata=_positive())
    max_wait_ms: float = field(default=0.0, metadata=_non_negative())
    companion_wait_ms: float = field(default=25.0, metadata=_non_negative())
    max_queue: int = field(default=64, metadata=_positive())
    cache_dir: str = ""
    # "crop": the model's own centre crop; "pad": pad to a square first (keeps hems, collars)
    preprocess: str = field(default="crop", metadata=_one_of("crop", "pad"))


@dataclass(frozen=True)
class ImageSettings:
    max_bytes: int = field(default=20_000_000, metadata=_positive())
    max_pixels: int = field(default=40_000_000, metadata=_positive())
    min_side: int = field(default=16, metadata=_positive())
    max_aspect: float = field(default=12.0, metadata=_check(lambda v: v >= 1, "must be >= 1"))


@dataclass(frozen=True)
class IndexSettings:
    dir: str = "data/index"
    dtype: str = field(default="i8", metadata=_one_of("i8", "f16", "f32"))
    connectivity: int = field(default=18, metadata=_positive())
    expansion_add: int = field(default=256, metadata=_positive())
    expansion_search: int = field(default=192, metadata=_positive())
    verify_checksums: bool = True
    watch_interval_s: float = field(default=30.0, metadata=_non_negative())


@dataclass(frozen=True)
class SearchSettings:
    default_k: int = field(default=6, metadata=_positive())
    max_k: int = field(default=10, metadata=_positive())
    diversity: float = field(default=0.0, metadata=_unit_interval())
    surprise_diversity: float = field(default=0.6, metadata=_unit_interval())
    text_weight: float = field(default=0.5, metadata=_non_negative())
    overfetch: int = field(default=4, metadata=_positive())
    exact_filter_limit: int = field(default=20_000, metadata=_non_negative())
    query_store: str = "data/state/queries.sqlite"
    flip_augment: bool = False
    category_gating: bool = False
    gating_confidence: float = field(default=0.6, metadata=_unit_interval())
    category_probe: bool = True
    category_votes: int = field(default=0, metadata=_non_negative())
    category_confidence: float = field(default=0.0, metadata=_unit_interval())


@dataclass(frozen=True)
class BuildSettings:
    download_concurrency: int = field(default=16, metadata=_positive())
    download_timeout_s: float = field(default=20.0, metadata=_positive())
    download_retries: int = field(default=3, metadata=_non_negative())
    max_image_bytes: int = field(default=20_000_000, metadata=_positive())
    prefetch: int = field(default=64, metadata=_positive())
    batch_size: int = field(default=32, metadata=_positive())
    cache_dir: str = ""
    keep_builds: int = field(default=1, metadata=_non_negative())
    category_probe: bool = True
    # `index_builder.py build --ray`: CPUs per model actor on GPU-less nodes, and how many
    # download/decode workers feed the model actors (0 = one per 8 CPUs of a CPU cluster;
    # with GPUs, every CPU not driving a GPU).
    ray_cpus_per_actor: int = field(default=4, metadata=_positive())
    ray_decode_workers: int = field(default=0, metadata=_non_negative())


@dataclass(frozen=True)
class CatalogSettings:
    # canonical column -> the feed's column name
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TelegramSettings:
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    album_size: int = field(default=6, metadata=_check(lambda v: 1 <= v <= 10, "must be 1..10"))
    mode: str = field(default="polling", metadata=_one_of("polling", "webhook"))
    webhook_url: str = ""
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = field(default=8443, metadata=_check(lambda v: 0 < v < 65536, "a port"))
    media_group_wait_ms: int = field(default=800, metadata=_non_negative())
    request_timeout_s: float = field(default=15.0, metadata=_positive())
    photo_source: str = field(default="upload", metadata=_one_of("upload", "url"))
    admin_ids: str = field(
        default="",
        metadata=_check(
            lambda v: all(p.strip().lstrip("-").isdigit() for p in v.split(",") if p.strip()),
            "must be comma-separated numeric user ids",
        ),
    )

    @property
    def admins(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.admin_ids.split(",") if p.strip())


@dataclass(frozen=True)
class LimitSettings:
    searches_per_minute: int = field(default=10, metadata=_positive())


@dataclass(frozen=True)
class LinkSettings:
    utm_medium: str = "chatbot"
    utm_campaign: str = "fashionbot"


@dataclass(frozen=True)
class DiscordSettings:
    test_guild_id: int = field(default=0, metadata=_non_negative())
    reply_style: str = field(default="gallery", metadata=_one_of("gallery", "embeds"))
    ephemeral: bool = False
    media_hosts: str = "cdn.discordapp.com,media.discordapp.net"
    api_base: str = ""
    gateway_url: str = ""
    allow_loopback_media: bool = False  # only for tests against a local fake Discord

    @property
    def allowed_media_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.media_hosts.split(",") if h.strip())


@dataclass(frozen=True)
class HttpSettings:
    port: int = field(default=8080, metadata=_check(lambda v: 0 <= v <= 65535, "must be a port"))


@dataclass(frozen=True)
class LogSettings:
    level: str = field(default="INFO", metadata=_one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = field(default="text", metadata=_one_of("text", "json"))


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    build: BuildSettings = field(default_factory=BuildSettings)
    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    links: LinkSettings = field(default_factory=LinkSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    log: LogSettings = field(default_factory=LogSettings)
    # The file the settings came from; relative paths in it resolve against its folder.
    source: Path = field(default=DEFAULT_CONFIG_PATH, compare=False)

    def resolve_path(self, value: str) -> Path:
        """A path setting, relative to the config file's folder unless absolute."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.source.parent / path).resolve()

    def with_overrides(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some keys replaced, validated like a file's values."""
        raw = {name: dataclasses.asdict(getattr(self, name)) for name in _section_types()}
        for section, values in sections.items():
            raw.setdefault(section, {}).update(values)
        return _build_settings(raw, self.source)


def _section_types() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if f.name != "source"}


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """Convert a TOML or environment value to the field's type, or raise ConfigError."""
    if isinstance(expected, types.GenericAlias) and expected.__origin__ is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of names, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if expected in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = expected(value.replace("_", "") if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if expected is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return number
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown setting (known: {', '.join(known)})")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full_key = f"{name}.{key}"
        coerced = _coerce(full_key, value, hints[key])
        check = known[key].metadata.get("check")
        if check is not None and not check[0](coerced):
            raise ConfigError(f"{full_key} {check[1]} (got {coerced!r})")
        kwargs[key] = coerced
    return cls(**kwargs)


def _build_settings(raw: Mapping[str, Any], source: Path) -> Settings:
    sections = _section_types()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section (known: {', '.join(sections)})")
    built = {}
    for name, cls in sections.items():
        values = raw.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}]: expected a table")
        built[name] = _build_section(name, cls, values)
    settings = Settings(**built, source=source)
    if settings.search.default_k > settings.search.max_k:
        raise ConfigError("search.default_k must not exceed search.max_k")
    return settings


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("__")
        if section == "catalog" and key.startswith("columns__"):
            overrides.setdefault("catalog", {}).setdefault("columns", {})[key[9:]] = value
        else:
            overrides.setdefault(section, {})[key] = value
    return overrides


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file (argument, else $FASHIONBOT_CONFIG, else ./config.toml)."""
    environ = os.environ if environ is None else environ
    chosen = path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    config_path = Path(chosen).expanduser().resolve()
    try:
        raw: dict[str, Any] = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML ({exc})") from None
    for section, values in _env_overrides(environ).items():
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}]: expected a table")
        for key, value in values.items():
            if isinstance(value, dict):
                target.setdefault(key, {}).update(value)
            else:
                target[key] = value
    return _build_settings(raw, config_path)
