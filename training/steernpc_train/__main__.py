"""`python -m steernpc_train ...` is `steernpc ...` (handy under torchrun: `torchrun ... -m steernpc_train train sft ...`)."""

import sys

from steernpc_train.cli import main

sys.exit(main())
