"""Where the API is and who calls it: explicit settings, or the CLI's profile
(``$DORA_CONFIG``, else ``~/.config/dora/config.yaml``) as ``dora up`` writes it."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def config_path() -> Path:
    """``$DORA_CONFIG``, else ``$XDG_CONFIG_HOME/dora/config.yaml`` (``~/.config``)."""
    given = os.environ.get("DORA_CONFIG")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dora" / "config.yaml"


@dataclass(frozen=True)
class Settings:
    """One cluster and identity: the API server's URL, a bearer token, the cluster CA (PEM
    text), and the zone and workspace of calls that name none (the token's when ``None``)."""

    url: str
    token: str
    ca: str
    zone: str | None = None
    workspace: str | None = None

    @classmethod
    def from_profile(cls, name: str | None = None, path: Path | None = None) -> Settings:
        """The settings of profile ``name`` (the current one when ``None``) of the CLI's
        profiles file."""
        path = path or config_path()
        try:
            loaded: Any = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            loaded = {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path} is not a readable Dora config: {e}") from e
        profiles = loaded.get("profiles") or {}
        wanted = name or loaded.get("current")
        if wanted is None:
            raise ConfigError(
                f"no profile configured in {path}; run `dora up`, or give url, token and ca"
            )
        profile = profiles.get(wanted)
        if not isinstance(profile, dict):
            raise ConfigError(f"no profile {wanted!r} in {path}; see `dora config profile ls`")
        missing = [key for key in ("apiServer", "token", "ca") if not profile.get(key)]
        if missing:
            raise ConfigError(f"profile {wanted!r} in {path} has no {', '.join(missing)}")
        return cls(
            url=profile["apiServer"],
            token=profile["token"],
            ca=profile["ca"],
            zone=profile.get("zone"),
            workspace=profile.get("workspace"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that trusts the cluster CA only, never the system's roots."""
        return ssl_context(self.ca)


def read_ca(ca: str | os.PathLike[str]) -> str:
    """The PEM text of ``ca``: PEM text as is, else the file it names."""
    if isinstance(ca, str) and "-----BEGIN" in ca:
        return ca
    try:
        return Path(ca).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the CA certificate {ca}: {e}") from e


def ssl_context(ca: str) -> ssl.SSLContext:
    """TLS that trusts the PEM certificates in ``ca`` only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=ca)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"the cluster CA is not usable PEM: {e}") from e
    return context
