from perceiver_cli import interrupts

interrupts.install(starting=True)  # before the CLI's imports: Ctrl-C during start-up is "interrupted" too

from perceiver_cli.cli import main  # noqa: E402

main()
