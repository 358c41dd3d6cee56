"""Print an API token for a staff user (``Authorization: Token <key>``).

    manage.py create_api_token alice            # the user's token (created when missing)
    manage.py create_api_token alice --rotate   # a new token; the old one stops working
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print the API token of a staff user (created when missing; --rotate replaces it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Replace the existing token with a new one.")

    def handle(self, *args: Any, username: str, rotate: bool, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.", returncode=2)
        if not user.is_active or not user.is_staff:
            raise CommandError(f"{username!r} is not an active staff user; API writes need staff.", returncode=2)
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _created = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
