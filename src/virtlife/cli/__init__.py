"""The ``virtlife`` command: thin click commands over ``virtlife.services``.

Commands parse arguments, call one service function and print its result; they hold
no policy. User errors print one line and exit non-zero, never a traceback.
"""
