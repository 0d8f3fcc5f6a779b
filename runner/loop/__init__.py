"""The runner process: claim, dispatch, record outcomes, periodic duties, wiring."""
