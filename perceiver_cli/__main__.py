from perceiver_cli.cli import main

main()
