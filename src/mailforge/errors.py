"""Exit codes and the errors that the command line turns into one-line messages."""

EXIT_OK = 0
EXIT_FAILURE = 1
# Bad input: a wrong config key, a malformed address, a duplicate user.
EXIT_USAGE = 2
# A worker that cannot boot (bad config, port taken) exits with this so the supervisor backs
# off instead of respawning it in a tight loop (gunicorn's WORKER_BOOT_ERROR).
EXIT_WORKER_BOOT = 3


class MailforgeError(Exception):
    """An error with a message fit for one line on stderr."""

    exit_code = EXIT_FAILURE


class UsageError(MailforgeError):
    """The operator gave input we refuse: shown as one line, exit status 2."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file problem, naming the file and the key."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)
