from alf.cli import main

main()
