"""Settings: pydantic models holding every default, filled from a TOML file and then the
environment.

The file is `config.toml` unless `--config FILE` or `FASHIONBOT_CONFIG` names another. Every
key can be overridden by `FASHIONBOT_<SECTION>__<KEY>` (read by pydantic-settings). Values
are validated once at start-up; a bad value stops the program with a one-line message naming
the key. Bot tokens are deliberately not settings: they come from the environment only.

The engine's settings are the sections it reads itself; the chat front-ends extend them with
their own sections (bot/settings.py) and read the same file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from engine.net_safety import parse_allowed_host

ENV_PREFIX = "FASHIONBOT_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV = "FASHIONBOT_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"

UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names the key."""


class Section(BaseModel):
    """One table of the config file. A misspelt key is an error rather than silently
    ignored, and no float setting may be inf or nan (every one is a size, a time or a
    weight)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1; for a count or a size in a config file it is a slip.
        field = cls.model_fields[info.field_name or ""]
        if isinstance(value, bool) and field.annotation in (int, float):
            raise ValueError("must be a number, not true or false")
        return value


# torch device names the embedder accepts; anything else would fail only when the model loads.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,2})?")


class ModelSettings(Section):
    name: str = "marqo-fashionclip"
    pretrained: str = ""
    device: str = "auto"
    threads: NonNegativeInt = 0
    max_batch: PositiveInt = 16
    max_wait_ms: NonNegativeFloat = 0.0
    companion_wait_ms: NonNegativeFloat = 25.0
    max_queue: PositiveInt = 64
    cache_dir: str = ""
    # "crop": the model's own centre crop; "pad": pad to a square first (keeps hems, collars)
    preprocess: Literal["crop", "pad"] = "crop"
    # The arithmetic of the forward pass; "auto" = fp16 on CUDA; on CPUs int8 where it
    # agrees with fp32 on the loaded weights (checked at start), else fp32 (bf16 measured
    # slower than fp32 on this project's CPUs: engine/precision.py)
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError('must be "auto", "cpu", "cuda", "cuda:N" or "mps"')
        return value


class ImageSettings(Section):
    """What the decoder accepts; `engine.images.decode_image` takes this section as is."""

    max_bytes: PositiveInt = 20_000_000
    max_pixels: PositiveInt = 40_000_000
    min_side: PositiveInt = 16
    max_aspect: Annotated[float, Field(ge=1.0)] = 12.0
    # Memory that photos being decoded at once may hold; past it, a photo waits its turn.
    max_decoding_mb: PositiveInt = 512


class IndexSettings(Section):
    dir: str = "data/index"
    dtype: Literal["i8", "f16", "f32"] = "i8"
    connectivity: PositiveInt = 18
    expansion_add: PositiveInt = 256
    expansion_search: PositiveInt = 192
    verify_checksums: bool = True
    watch_interval_s: NonNegativeFloat = 30.0


class SearchSettings(Section):
    default_k: PositiveInt = 6
    max_k: PositiveInt = 10
    # The deepest any search pages: a forged "page 999999" must not rank a million products.
    max_results: Annotated[int, Field(ge=1, le=100_000)] = 100
    diversity: UnitInterval = 0.0
    surprise_diversity: UnitInterval = 0.6
    text_weight: NonNegativeFloat = 0.5
    overfetch: PositiveInt = 4
    exact_filter_limit: NonNegativeInt = 20_000
    query_store: str = "data/state/queries.sqlite"
    flip_augment: bool = False
    category_gating: bool = False
    gating_confidence: UnitInterval = 0.6
    category_probe: bool = True
    category_votes: NonNegativeInt = 0
    category_confidence: UnitInterval = 0.0
    category_weight: NonNegativeFloat = 0.3
    colour_weight: NonNegativeFloat = 0.15

    @model_validator(mode="after")
    def _default_within_max(self) -> SearchSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        return self


class BuildSettings(Section):
    download_concurrency: PositiveInt = 16
    download_timeout_s: PositiveFloat = 20.0
    download_retries: NonNegativeInt = 3
    max_image_bytes: PositiveInt = 20_000_000
    prefetch: PositiveInt = 64
    batch_size: PositiveInt = 32
    cache_dir: str = ""
    keep_builds: NonNegativeInt = 1
    category_probe: bool = True
    colour_descriptors: bool = True
    # Crop a catalog photo of someone wearing the product to the garment of the product's
    # category (engine/catalog_crop.py); product photos are embedded whole.
    crop_to_category: bool = False
    # `index_builder.py build --ray`: CPUs per model actor on GPU-less nodes, and how many
    # download/decode workers feed the model actors (0 = one per 8 CPUs of a CPU cluster;
    # with GPUs, every CPU not driving a GPU).
    ray_cpus_per_actor: PositiveInt = 4
    ray_decode_workers: NonNegativeInt = 0
    # Local image paths are read only under the catalog's folder and these folders (a
    # feed cannot make the build read /etc or a home folder and index it for shoppers).
    image_roots: list[str] = Field(default_factory=list)
    # Downloads go to public addresses only; these hosts or networks ("images.internal",
    # "10.0.0.0/8") are allowed besides.
    allow_private_hosts: list[str] = Field(default_factory=list)
    # A cached download older than this is revalidated with the server (ETag /
    # Last-Modified) before a build uses it; 0 = every build.
    cache_max_age_s: NonNegativeFloat = 7 * 24 * 3600.0
    # A catalog given as a URL: the most it may download, and how long the whole download
    # may take (a shop's full feed can be hundreds of megabytes).
    max_feed_bytes: PositiveInt = 2_000_000_000
    feed_timeout_s: PositiveFloat = 600.0

    @field_validator("allow_private_hosts")
    @classmethod
    def _hosts_or_networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            parse_allowed_host(entry)  # its ValueError names the entry
        return entries


# Catalog category names that mean a garment finder class (engine/garments.py), compared
# lower-case; names equal after this mapping are the same category.
DEFAULT_GARMENT_SYNONYMS = {
    "jeans": "pants",
    "trousers": "pants",
    "leggings": "pants",
    "sneakers": "shoes",
    "boots": "shoes",
    "heels": "shoes",
    "sandals": "shoes",
    "handbag": "bag",
    "handbags": "bag",
    "bags": "bag",
    "purse": "bag",
    "jacket": "outwear",
    "coat": "outwear",
    "outerwear": "outwear",
    "sweater": "longsleeve",
    "hoodie": "longsleeve",
    "tshirt": "t-shirt",
    "tee": "t-shirt",
    "blouse": "shirt",
    "cap": "hat",
}


class GarmentSettings(Section):
    """Finding the garments in a street photo and searching each (engine/garments.py)."""

    enabled: bool = True
    # Each side of a garment's box grows by this share of its size before cropping.
    margin: NonNegativeFloat = 0.1
    # Put the products of the garment's category first (when the catalog has it).
    prefer_category: bool = True
    # "pad": the crop padded to a square on white (like a product shot); "crop": the
    # model's own centre crop (cuts the ends off tall garments).
    crop_preprocess: Literal["crop", "pad"] = "pad"
    max_garments: PositiveInt = 6
    # A look's garment crops go through the model this many at a time (memory against
    # time: docs/garments.md); shoppers' photos still share one pass per batch.
    crops_per_pass: PositiveInt = 2
    min_confidence: UnitInterval = 0.3
    min_area: UnitInterval = 0.006
    # The finder's input: the photo's long side scaled to this (a multiple of 32; the
    # head was trained at 320). Smaller is faster and finds less (docs/garments.md).
    input_long_side: int = Field(default=288, ge=64, le=640, multiple_of=32)
    synonyms: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_GARMENT_SYNONYMS))


class CatalogSettings(Section):
    # canonical column -> the feed's column name
    columns: dict[str, str] = Field(default_factory=dict)
    # A Shopify products.json read from a file names no shop: its product links are this
    # address + /products/<handle> (a products.json fetched by URL uses its own address).
    shop_url: str = ""
    # The currency of prices that carry none (Shopify's products.json), e.g. "EUR".
    currency: str = ""

    @field_validator("shop_url")
    @classmethod
    def _http_address(cls, value: str) -> str:
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError('must be the shop\'s http(s) address, e.g. "https://shop.example.com"')
        return value


class StateSettings(Section):
    # SQLAlchemy URL of the state store (engine/state): "sqlite:///RELATIVE/PATH" resolves
    # against the config file's folder; "postgresql://user@host/db" for several replicas.
    url: str = "sqlite:///data/state/state.sqlite"

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://", "postgresql+")):
            raise ValueError('must start with "sqlite://" or "postgresql://"')
        return value


class AnalyticsSettings(Section):
    # Record searches, results shown and clicks in the state store.
    enabled: bool = True
    # Rows older than this are deleted (on start-up and daily).
    retention_days: PositiveInt = 90


class Settings(BaseSettings):
    """The engine's sections. Other sections of the file belong to the front-ends and are
    left to their settings (bot/settings.py), so the builder reads the bot's file too."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=False,
        frozen=True,
        extra="ignore",
    )

    model: ModelSettings = ModelSettings()
    images: ImageSettings = ImageSettings()
    index: IndexSettings = IndexSettings()
    search: SearchSettings = SearchSettings()
    build: BuildSettings = BuildSettings()
    catalog: CatalogSettings = CatalogSettings()
    garments: GarmentSettings = GarmentSettings()
    state: StateSettings = StateSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    # The file the settings came from; relative paths in it resolve against its folder.
    # Private, so that no file key or environment variable can set it.
    _source: Path = PrivateAttr(default=DEFAULT_CONFIG_PATH)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings reads the file and the environment it is given; constructing the
        # class reads nothing else, so Settings() is the defaults alone.
        return (init_settings,)

    @property
    def source(self) -> Path:
        return self._source

    def resolve_path(self, value: str) -> Path:
        """A path setting, relative to the config file's folder unless absolute."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.source.parent / path).resolve()

    def with_overrides(self, **sections: dict[str, Any]) -> Self:
        """A copy with some keys replaced, validated like a file's values."""
        unknown = sorted(set(sections) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"[{unknown[0]}]: unknown section (known: {_known(type(self))})")
        return _validated(type(self), _merged(self.model_dump(), sections), self.source)


SettingsT = TypeVar("SettingsT", bound=Settings)


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ,
    so that callers (tests, benchmarks) can load settings without the process's variables."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def _environment_values(schema: type[Settings], environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        values = _EnvironmentSource(schema, environ)()
    except SettingsError as exc:
        raise ConfigError(f"environment: {str(exc).splitlines()[0]}") from None
    # The source reads only the schema's own sections. A variable naming any other section
    # is passed on, so the schema's `extra` rule decides: the engine leaves the bot's
    # sections alone, the complete bot schema rejects a misspelt one.
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        section, delimiter, _ = name[len(ENV_PREFIX) :].lower().partition(ENV_NESTED_DELIMITER)
        if delimiter and section not in schema.model_fields:
            values[section] = {}
    return values


def _read_config_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys replacing its own, table by table."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


# pydantic's wording for type errors is long and names Python types; a config file's
# reader knows TOML's.
_REASONS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a table",
    "model_type": "must be a table",
}


def _known(model: type[BaseModel], path: tuple[int | str, ...] = ()) -> str:
    """The keys of the table at `path`, for a message about a misspelt one."""
    for part in path:
        model = model.model_fields[str(part)].annotation  # type: ignore[assignment]  # a section
    return ", ".join(model.model_fields)


def _one_line(error: ErrorDetails, schema: type[Settings]) -> str:
    location = error["loc"]
    key = ".".join(str(part) for part in location)
    if error["type"] == "extra_forbidden":
        if len(location) == 1:
            return f"[{key}]: unknown section (known: {_known(schema)})"
        return f"{key}: unknown setting (known: {_known(schema, location[:-1])})"
    reason = _REASONS.get(error["type"]) or error["msg"]
    reason = reason.removeprefix("Value error, ").replace("Input should be", "must be")
    if isinstance(error["input"], Mapping):  # a rule across a table's keys
        return f"{key}: {reason}"
    return f"{key} {reason} (got {error['input']!r})"


def _validated(schema: type[SettingsT], values: Mapping[str, Any], source: Path) -> SettingsT:
    try:
        settings = schema.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(_one_line(errors[0], schema) + more) from None
    settings._source = source
    return settings


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    schema: type[SettingsT] = Settings,  # type: ignore[assignment]  # the bound's default
) -> SettingsT:
    """Read the config file (argument, else $FASHIONBOT_CONFIG, else ./config.toml), then
    let `FASHIONBOT_<SECTION>__<KEY>` variables of `environ` (default: the process's)
    override its keys. `schema` is Settings or a front-end's extension of it."""
    environ = os.environ if environ is None else environ
    chosen = path or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    config_path = Path(chosen).expanduser().resolve()
    values = _merged(_read_config_file(config_path), _environment_values(schema, environ))
    return _validated(schema, values, config_path)
