import sys

if sys.argv[1:2] == ["--training"]:  # nplstm's fit against torch from the same weights and data order
    from .training import main as training_main

    raise SystemExit(training_main(sys.argv[2:]))

from .suite import main

raise SystemExit(main())
