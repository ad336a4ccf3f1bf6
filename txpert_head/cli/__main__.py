from txpert_head.cli.main import main

main()
