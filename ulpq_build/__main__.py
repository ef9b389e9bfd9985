from ulpq_build.cli import main

raise SystemExit(main())
