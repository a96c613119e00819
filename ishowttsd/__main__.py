from ishowttsd.cli import main

raise SystemExit(main())
