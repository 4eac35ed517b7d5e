"""The demo's data: items, stories, users, posts and pages, the same in every run."""

from __future__ import annotations

import hashlib

CATEGORIES = ("books", "games", "garden", "kitchen", "music", "tools")
N_ITEMS = 10_000
N_LISTED = 1_000
N_STORIES = 500
N_USERS = 10


def item(item_id: int) -> dict[str, object]:
    """The item with this id, the same in every run."""
    digest = hashlib.sha256(f"item{item_id}".encode()).digest()
    return {
        "id": item_id,
        "name": f"Item {item_id}",
        "category": CATEGORIES[digest[0] % len(CATEGORIES)],
        "price": round(1 + int.from_bytes(digest[1:3], "big") / 100, 2),
        "stock": digest[3] % 50,
        "tags": [t for t, b in zip(("new", "sale", "eco"), digest[4:7], strict=True) if b & 1],
    }


STORY_IDS = tuple(1000 + 7 * rank for rank in range(N_STORIES))


def story(story_id: int) -> dict[str, object] | None:
    """A story, or None; some are broken on purpose (see the module docstring)."""
    rank, offset = divmod(story_id - 1000, 7)
    if offset or not 0 <= rank < N_STORIES or rank % 125 == 124:
        return None
    digest = hashlib.sha256(f"story{story_id}".encode()).digest()
    data: dict[str, object] = {
        "id": story_id,
        "by": f"user{digest[0] % 40}",
        "score": 1 + int.from_bytes(digest[1:3], "big") % 900,
        "title": f"Story number {story_id}",
        "time": 1_700_000_000 + story_id * 60,
        "type": "story",
        "descendants": digest[3] % 200,
        "url": f"http://127.0.0.1/story/{story_id}",
    }
    if rank % 50 == 49:
        del data["score"]
    elif rank % 70 == 69:
        data["score"] = str(data["score"])
    return data


def _make_posts() -> tuple[dict[str, object], ...]:
    counts = [u + 5 for u in range(1, N_USERS)]
    counts.append(100 - sum(counts))
    user_ids = [user for user, count in enumerate(counts, start=1) for _ in range(count)]
    return tuple(
        {
            "userId": user,
            "id": post_id,
            "title": f"Post {post_id} by user {user}",
            "body": "lorem ipsum " * (1 + post_id % 5),
            "likes": (post_id * 37) % 101,
        }
        for post_id, user in enumerate(user_ids, start=1)
    )


POSTS = _make_posts()
USERS = tuple(
    {"id": u, "name": f"User {u}", "username": f"user{u}", "email": f"user{u}@example.test"}
    for u in range(1, N_USERS + 1)
)


def page_html(n: int) -> bytes:
    """A deterministic HTML page with links to three others."""
    digest = hashlib.sha256(f"page{n}".encode()).hexdigest()
    links = "".join(f'<li><a href="/pages/{(n * 7 + k) % 10_000}">page</a></li>' for k in (1, 2, 3))
    return (
        f"<!doctype html><html><head><title>Page {n}</title></head><body>"
        f"<h1>Page {n}</h1><p>{digest}</p><ul>{links}</ul></body></html>"
    ).encode()
