from ssmpipe.cli import main

raise SystemExit(main())
