"""Sends one Standard Webhooks delivery, signed by the PyPI `standardwebhooks` package (not by Qila's code).

Usage: standard_webhooks_sender.py URL WHSEC MSG_ID AGE_SECONDS BODY

AGE_SECONDS backdates the timestamp. Prints the answer's status on the first line and its body on the second.
"""

import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook


def main() -> None:
    url, secret, msg_id, age, body = sys.argv[1:6]
    timestamp = datetime.now(tz=timezone.utc) - timedelta(seconds=int(age))
    signature = Webhook(secret).sign(msg_id, timestamp, body)
    request = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    print(status)
    print(text)


if __name__ == "__main__":
    main()
