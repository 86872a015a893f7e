#!/usr/bin/env python3
"""Generate recipients.csv for the example newsletter campaign.

Deterministic: the same seed always yields the same file.
Usage: python3 generate_recipients.py [--rows N] [--seed S] [--out PATH]
"""
import argparse
import csv
import os
import random
import unicodedata

FIRST_NAMES = [
    "Alice", "Benjamin", "Chloe", "Daniel", "Emma", "Frank", "Grace", "Henry",
    "Isabel", "Jack", "Olivia", "Liam", "Noah", "Sophia", "Ethan", "Mia",
    "José", "María", "Zoë", "Chloé", "François", "Hélène", "Søren", "Åsa",
    "Łukasz", "Małgorzata", "Jürgen", "Björn", "Vojtěch", "Ömer", "Çağla",
    "Ngozi", "Chidi", "Amara", "Kwame", "Aisha", "Fatima", "Omar", "Yusuf",
    "Priya", "Arjun", "Ananya", "Rohan", "Mei", "Wei", "Hiroshi", "Yuki",
    "Sakura", "Min-jun", "Ji-woo", "Minh", "Thảo", "Olga", "Dmitri",
    "Ines", "João", "Siobhán", "Seán", "Niamh", "Mateo", "Lucía", "Renée",
    "太郎", "花子", "Иван", "Анна",
]

LAST_NAMES = [
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Martin", "Clarke",
    "García", "Fernández", "López", "Müller", "Schäfer", "Weiß", "Dubois",
    "Lefèvre", "Novák", "Kowalski", "Wiśniewski", "Nowak", "Jensen",
    "Ødegaard", "Lindqvist", "Öztürk", "Yılmaz", "Okafor", "Mensah",
    "Adeyemi", "Haddad", "Khan", "Patel", "Sharma", "Iyer", "Chen", "Wang",
    "Li", "Tanaka", "Suzuki", "Kim", "Park", "Trần", "Ivanova", "Petrov",
    "O'Brien", "Ní Bhriain", "Rossi", "Esposito", "Silva", "Conceição",
    "田中", "佐藤", "Смирнов",
]

CITIES = [
    "London", "Manchester", "Dublin", "Paris", "Lyon", "Berlin", "München",
    "Zürich", "Wien", "Kraków", "Praha", "København", "Malmö", "Oslo",
    "Madrid", "São Paulo", "Lisboa", "Roma", "Istanbul", "Lagos", "Accra",
    "Nairobi", "Cairo", "Mumbai", "Bengaluru", "Singapore", "Tokyo", "東京",
    "Seoul", "Hà Nội", "Sydney", "Auckland", "Toronto", "Montréal",
    "New York", "Chicago", "Austin", "Mexico City", "Bogotá", "Buenos Aires",
]

DOMAINS = [
    "example.com", "example.net", "example.org",
    "mail.example", "post.example", "inbox.example", "letters.example",
    "home.example", "office.example", "corp.example", "school.example",
    "uni.example", "news.example", "cloud.example", "web.example",
    "box.example", "mx.example", "mail.example.com", "users.example.net",
    "members.example.org",
]

PLANS = ["basic"] * 6 + ["plus"] * 3 + ["pro"]  # weighted 60/30/10

# Transliteration for names that NFKD cannot reduce to ASCII.
TRANSLIT = {
    "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "ı": "i", "đ": "d",
    "太郎": "taro", "花子": "hanako", "田中": "tanaka", "佐藤": "sato",
    "Иван": "ivan", "Анна": "anna", "Смирнов": "smirnov",
}


def ascii_local(name: str) -> str:
    """Turn a display name into an ASCII e-mail local-part fragment."""
    if name in TRANSLIT:
        return TRANSLIT[name]
    s = "".join(TRANSLIT.get(c, c) for c in name)
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    s = "".join(c for c in s.lower() if c.isalnum() or c == "-")
    return s or "reader"


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default=os.path.join(here, "recipients.csv"))
    args = ap.parse_args()

    rng = random.Random(args.seed)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["email", "first_name", "last_name", "city", "plan", "points", "vip"])
        for n in range(1, args.rows + 1):
            first = rng.choice(FIRST_NAMES)
            last = rng.choice(LAST_NAMES)
            domain = rng.choice(DOMAINS)
            # the running number n makes every address unique
            email = f"{ascii_local(first)}.{ascii_local(last)}.{n}@{domain}"
            city = rng.choice(CITIES)
            plan = rng.choice(PLANS)
            points = int(rng.triangular(0, 5000, 400))
            vip = "yes" if rng.random() < 0.10 else ""
            w.writerow([email, first, last, city, plan, points, vip])


if __name__ == "__main__":
    main()
