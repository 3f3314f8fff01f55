import sys

from prediction_report.main import main

sys.exit(main())
