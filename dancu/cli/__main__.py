from dancu.cli.main import main

main()
