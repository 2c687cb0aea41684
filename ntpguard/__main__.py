from ntpguard.cli import command

command()
