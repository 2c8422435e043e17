"""Exercise checkers: one module per chapter (`ch01`, `ch02`, ...).

Every checker takes the learner's answer (a function or a value) and prints one line:
`✓` when it is right, `✗` with a hint when it is wrong, `…` when the exercise still
raises NotImplementedError (not attempted yet). It returns True only when right, and
never raises, so a notebook with unfinished exercises still runs top to bottom.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


def checker(title: str) -> Callable:
    """Decorate `check(answer) -> None` (which asserts) into a friendly, non-raising checker."""

    def wrap(check: Callable) -> Callable[..., bool]:
        @functools.wraps(check)
        def run(*args, **kwargs) -> bool:
            try:
                check(*args, **kwargs)
            except NotImplementedError:
                print(f"… {title}: not attempted yet (replace the `raise NotImplementedError`)")
                return False
            except AssertionError as err:
                print(f"✗ {title}: {err}")
                return False
            except Exception as err:  # the learner's code crashed: say how, briefly
                print(f"✗ {title}: your code raised {type(err).__name__}: {err}")
                return False
            print(f"✓ {title}: correct")
            return True

        return run

    return wrap
