from ragscale.cli import main

raise SystemExit(main())
