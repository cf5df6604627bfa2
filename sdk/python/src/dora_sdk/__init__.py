"""Dora's Python SDK: a client of the HTTPS API.

>>> from dora_sdk import Client
>>> dora = Client()                      # the CLI's current profile
>>> dora.apply(open("job.yaml").read())
>>> dora.wait_until("workload", "Running", "train", timeout=120)
"""

from .aio import AsyncClient
from .client import Client
from .config import Settings, config_path
from .errors import (
    ApiError,
    ConfigError,
    Conflict,
    DoraError,
    Forbidden,
    Invalid,
    NotFound,
    StreamError,
    Unauthorized,
    WaitTimeout,
)
from .models import (
    ExecResult,
    FileInfo,
    FileList,
    KindInfo,
    Metadata,
    OwnerReference,
    Resource,
    ResourceList,
    WatchEvent,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Conflict",
    "DoraError",
    "ExecResult",
    "FileInfo",
    "FileList",
    "Forbidden",
    "Invalid",
    "KindInfo",
    "Metadata",
    "NotFound",
    "OwnerReference",
    "Resource",
    "ResourceList",
    "Settings",
    "StreamError",
    "Unauthorized",
    "WaitTimeout",
    "WatchEvent",
    "config_path",
]
