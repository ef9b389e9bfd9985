"""The one exception type a user ever sees: bad input, reported as a single line, exit status 2."""


class UserError(Exception):
    """Bad input or a request the tool cannot honour.

    The message is one line that names the input, says what is wrong and what to do.
    The CLI prints it without a traceback and exits with status 2.
    """

    exit_status = 2
