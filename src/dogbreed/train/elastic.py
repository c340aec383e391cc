"""torchrun, with a failed training process reported in one line.

torch's own launcher ends a failed run with its ChildFailedError traceback and a
banner on every host, after the training process has already said why in one
line (`dogbreed train: error: ...`, and SageMaker's failure file). Same
arguments as `torchrun`; exits with the failed process's code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(list(argv))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 1
        print(
            f"torchrun: training process {failure.local_rank} of {exc.name or 'the job'} "
            f"failed (exit {failure.exitcode}); its error is above",
            file=sys.stderr,
        )
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
