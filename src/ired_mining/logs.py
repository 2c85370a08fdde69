"""The console's log lines (conf/hydra/job_logging/rich.yaml): rich's handler, each message one line.

rich lays a log line out as a table as wide as the terminal and wraps a long message inside it, so a
run directory in a log line came out over several lines and broke when copied. Here the level and
the message are printed soft-wrapped: the terminal folds a long line, and a copy of it is the path again.
"""

from __future__ import annotations

from rich.logging import RichHandler


class OneLineRichHandler(RichHandler):
    def emit(self, record) -> None:
        try:
            message = self.render_message(record, self.format(record))
            self.console.print(self.get_level_text(record), message, soft_wrap=True)
        except Exception:
            self.handleError(record)
