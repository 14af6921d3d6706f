"""What several test modules share that is not a fixture (fixtures are in conftest.py)."""
