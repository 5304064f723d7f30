"""The `edgekit` command line: one module per verb group, each verb parsing its options, calling one library
function and printing the result. `edgekit.cli.main:main` is the console script."""
