from local_stack.supervisor.main import main

raise SystemExit(main())
