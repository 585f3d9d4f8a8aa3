"""``ionflux console``: a one-time sign-in link to the console of the running host.

The host started by ``ionflux up`` on this data directory serves the console
at its HTTP address (``<data-dir>/http.url``). The link signs one browser in
once (``console.signin_link_ttl_s``); whoever can run this command can read
the data directory, IONWALL's key included, so the link gives nothing more.
"""

from __future__ import annotations

import webbrowser

import click

from ._app import App, pass_app


@click.command()
@click.option("--open", "open_it", is_flag=True, help="Open the link in a web browser too.")
@click.option("--url", default=None, help="The host's HTTP address (default: <data-dir>/http.url).")
@pass_app
def console(app: App, open_it: bool, url: str | None) -> None:
    """Print (and --open) a one-time sign-in link to the web console.

    \b
      ionflux console          # prints http://127.0.0.1:8620/console/signin?code=...
      ionflux console --open   # and opens it
    """
    from ..console import signin_link

    config = app.config
    if url is None:
        where = config.data_dir / "http.url"
        try:
            url = where.read_text().strip()
        except OSError:
            url = ""
        if not url:
            raise click.ClickException(
                f"no host serves from {config.data_dir} ({where} is missing): start `ionflux up`"
            )
    app.require_writable(config.data_dir)
    link = signin_link(config.data_dir, url, config.console.signin_link_ttl_s)
    click.echo(link)
    if open_it and not webbrowser.open(link):
        click.echo("(no web browser to open here: open the link above yourself)", err=True)
