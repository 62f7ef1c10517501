"""The one base class of errors a user can fix by changing an input or a setting.

The command line prints such an error's message, which names the file or setting
and the fix, without a traceback; any other exception is a bug and keeps its traceback.
"""


class PipelineError(Exception):
    """Bad input, a bad setting, or a missing model: the message says what to do."""


class DiskFullError(PipelineError, OSError):
    """The disk filled up while an output was being written; the previous output is untouched.

    Also an ``OSError``, so callers that already handle disk errors keep working.
    """
