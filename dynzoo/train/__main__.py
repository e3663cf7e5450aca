"""``python -m dynzoo.train --model micronet_m0 --dataset digits …``"""

import sys

from dynzoo.train.cli import main

sys.exit(main(["python -m dynzoo.train", *sys.argv[1:]]))
