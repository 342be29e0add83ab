from autlearn.cli import main

raise SystemExit(main())
