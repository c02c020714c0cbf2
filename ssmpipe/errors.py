"""The errors a user's input can cause: each message names the file, key or value (the CLI prints it, one line)."""


class InputError(ValueError):
    """A file, folder or name given by the user that cannot be used."""


class ConfigError(InputError):
    """A config that cannot run; the message names the key and the value."""


class StoreError(InputError):
    """A store file ssmpipe cannot trust or write; the message names the file."""
