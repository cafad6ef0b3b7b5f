from hoprank.cli import main

main()
