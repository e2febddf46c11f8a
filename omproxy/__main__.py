from omproxy.cli import main

raise SystemExit(main())
