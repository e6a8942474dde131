from nudge.cli.main import main

main()
