"""Exception types of the setup engine; each message names the bad value and what to do about it."""

from __future__ import annotations


class KitSetupError(Exception):
    """Base class: the CLI prints the message of any of these and exits non-zero."""


class ConfigError(KitSetupError):
    """upstreams.yaml, the user override file or a command-line name is invalid."""


class GitError(KitSetupError):
    """A git command failed; the message carries the command and git's own words."""


class PinError(KitSetupError):
    """The pinned commit is missing from the remote, or a checkout is not at its pin."""


class CheckoutError(KitSetupError):
    """A checkout exists but cannot be used as it is (not made by setup, HEAD elsewhere)."""


class DirtyCheckoutError(KitSetupError):
    """The checkout holds work of the user's that an operation would destroy; nothing was changed."""


class PatchApplyError(KitSetupError):
    """A patch of the series does not apply; the checkout was restored to its state before the run."""


class PatchCheckError(KitSetupError):
    """check-patches found patches that do not apply strictly or lack their DEP-3 header."""


class EntryPointError(KitSetupError):
    """The entry point named in upstreams.yaml does not exist."""


class InstallError(KitSetupError):
    """pip failed."""


class ArchiveError(KitSetupError):
    """A source archive is refused (its sha256 is not the pinned one, or a member is hostile)."""


class FetchError(KitSetupError):
    """The base cannot be fetched: the remote cannot be reached (offline, no such host or folder),
    or a source archive cannot be had (no such file, pip failed). The message says how to use a mirror."""
