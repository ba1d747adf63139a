from saga.cli import main

main()
