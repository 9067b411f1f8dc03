from lightfer.cli import main

main()
