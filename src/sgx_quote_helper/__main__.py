"""``python -m sgx_quote_helper``: the same CLI as the ``sgx-quote-helper`` script."""

from .cli import main

if __name__ == "__main__":
    main()
