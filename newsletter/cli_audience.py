"""The CLI's commands for tags and topics (registered on the group in cli.py)."""

from __future__ import annotations

import click

from newsletter.cli import App, console, main, pass_app, subscribers_group


@subscribers_group.command("tag")
@click.argument("tag")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@pass_app
def subscribers_tag(app: App, tag: str, emails: tuple[str, ...]) -> None:
    """Put TAG on the subscribers with these addresses."""
    from newsletter import database, tags

    with database.transaction(app.ready_engine()) as session:
        count = tags.tag(session, emails, [tag])
    console.print(f"Tagged {count:,} subscribers {tag!r}.", markup=False)


@subscribers_group.command("untag")
@click.argument("tag")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@pass_app
def subscribers_untag(app: App, tag: str, emails: tuple[str, ...]) -> None:
    """Take TAG off the subscribers with these addresses."""
    from newsletter import database, tags

    with database.transaction(app.ready_engine()) as session:
        count = tags.untag(session, emails, [tag])
    console.print(f"Took {tag!r} off {count:,} subscribers.", markup=False)


@subscribers_group.command("tags")
@pass_app
def subscribers_tags(app: App) -> None:
    """Every tag in use and how many subscribers carry it."""
    from rich.table import Table

    from newsletter import database, tags

    table = Table("tag", "subscribers")
    with database.transaction(app.ready_engine()) as session:
        for name, count in tags.tag_counts(session):
            table.add_row(name, f"{count:,}")
    console.print(table)


@main.group("topics")
def topics_group() -> None:
    """Topics readers choose on the sign-up form and the preferences page."""


@topics_group.command("add")
@click.argument("key")
@click.argument("name")
@click.option("--description", default="", help="One line shown under the topic's name.")
@pass_app
def topics_add(app: App, key: str, name: str, description: str) -> None:
    """Define topic KEY (a short word used in `send --topic`) shown to readers as NAME; again to rename it."""
    from newsletter import database, topics

    with database.transaction(app.ready_engine()) as session:
        topic = topics.define_topic(session, key, name, description)
    console.print(f"Topic {topic.key}: {topic.name}", markup=False)


@topics_group.command("list")
@pass_app
def topics_list(app: App) -> None:
    """Show the topics."""
    from rich.table import Table

    from newsletter import database, topics

    table = Table("key", "name", "description")
    with database.transaction(app.ready_engine()) as session:
        for topic in topics.list_topics(session):
            table.add_row(topic.key, topic.name, topic.description)
    console.print(table)


@topics_group.command("remove")
@click.argument("key")
@pass_app
def topics_remove(app: App, key: str) -> None:
    """Delete topic KEY and every reader's choice of it."""
    from newsletter import database, topics

    with database.transaction(app.ready_engine()) as session:
        topics.remove_topic(session, key)
    console.print(f"Removed topic {key}.", markup=False)
