from local_stack.main import main

raise SystemExit(main())
