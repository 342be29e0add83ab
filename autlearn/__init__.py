"""AutLearn: the `autlearn` command line, gathering the commands each package owns."""
