"""The one base class of bad input: every module's error derives from it, and the scripts'
`cli.run` turns it into one sentence and exit status 2. Kept free of heavy imports so light
scripts (visualize, distance, schedule charts, summaries) report errors the same way."""


class UserError(Exception):
    """Input a user can fix (a file, a flag, a dataset); its message is the whole report."""
