from dancu.main import main

main()
