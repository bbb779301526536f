"""``python -m workbook`` = ``mlops-levels``."""

from workbook.cli import main

main()
