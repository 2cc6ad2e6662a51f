"""``python -m colbert_store.cli``: the same as the ``colbert-store`` console script."""

import sys

from colbert_store.cli import main

sys.exit(main())
