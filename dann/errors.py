"""UserError: a mistake the user can fix (bad path, missing download, broken file).

The entry points print it as one line, `error: <what>, <how to fix>`, with no traceback.
"""


class UserError(Exception):
    pass
