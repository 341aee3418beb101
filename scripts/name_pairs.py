#!/usr/bin/env python3
"""Regenerates crates/ewn-trust/tests/fixtures/name_pairs.tsv.

Each person is written by hand in the script of the state that registers them (national
Cyrillic, or Turkmen Latin); the other forms are what another state's documents print for
the same person, produced here by the published conventions named in the `source` column
(mechanical tables, as a passport office applies them). The Rust test checks that every
pair blinds alike; this script knows nothing of EWN's own folding.

    python3 scripts/name_pairs.py > crates/ewn-trust/tests/fixtures/name_pairs.tsv
"""

SRC = {
    "ICAO": "ICAO Doc 9303 Part 3 (8th ed.) sec. 6, Cyrillic transliteration table",
    "MRZ": "ICAO Doc 9303 Part 3 sec. 4.6 (MRZ: surname<<given names, filler <)",
    "UZ-LAT": "Uzbek Latin alphabet, Law of RUz 1993 as amended 1995 (oʻ gʻ sh ch q x ye yo yu ya)",
    "KZ-PASS": "KZ passport/ID Latin (MVD RK practice: ICAO with Ы Y, Й Y, Я YA, Ю YU; Ә Ғ Қ Ң Ө Ұ Ү Һ І to base letters)",
    "KG-PASS": "KG passport Latin (ICAO Doc 9303 with Ө O, Ү U, Ң N; Ы Y)",
    "TG-LAT": "TJ passport Latin (ICAO-style with Tajik Ғ G, Ӣ I, Қ Q, Ӯ U, Ҳ H, Ҷ J)",
    "TM-LAT": "Turkmen Latin alphabet, Law of TM 12.04.1993 (ç ş ž ý ň ä ö ü w)",
    "RU-CYR": "Russian-language civil registration (national documents of KZ/KG/TJ/UZ/TM in Russian)",
    "SWAP": "same document, given name first (as on forms and in reports)",
    "NOPAT": "the person without patronymic (ICAO passports and Latin IDs carry none)",
}

ICAO = {
    "А": "A", "Б": "B", "В": "V", "Г": "G", "Д": "D", "Е": "E", "Ё": "E", "Ж": "ZH", "З": "Z",
    "И": "I", "Й": "I", "К": "K", "Л": "L", "М": "M", "Н": "N", "О": "O", "П": "P", "Р": "R",
    "С": "S", "Т": "T", "У": "U", "Ф": "F", "Х": "KH", "Ц": "TS", "Ч": "CH", "Ш": "SH",
    "Щ": "SHCH", "Ъ": "IE", "Ы": "Y", "Ь": "", "Э": "E", "Ю": "IU", "Я": "IA",
    # regional letters in ICAO-style passports (Doc 9303 leaves them to the issuing state)
    "Ә": "A", "Ғ": "G", "Қ": "K", "Ң": "N", "Ө": "O", "Ұ": "U", "Ү": "U", "Һ": "H", "І": "I",
    "Ӣ": "I", "Ӯ": "U", "Ҳ": "KH", "Ҷ": "J",
    # Uzbek passports print Ў as the Latin alphabet's Oʻ, apostrophe dropped in the MRZ
    "Ў": "O",
}
KZ = dict(ICAO, **{"Й": "Y", "Я": "YA", "Ю": "YU", "Ы": "Y", "Х": "KH", "Ё": "YO"})
KG = dict(ICAO)
TG = dict(ICAO, **{"Қ": "Q", "Ҳ": "H", "Х": "KH", "Ё": "YO", "Ю": "YU", "Я": "YA", "Й": "Y"})
UZ = {
    "А": "a", "Б": "b", "В": "v", "Г": "g", "Д": "d", "Е": "e", "Ё": "yo", "Ж": "j", "З": "z",
    "И": "i", "Й": "y", "К": "k", "Л": "l", "М": "m", "Н": "n", "О": "o", "П": "p", "Р": "r",
    "С": "s", "Т": "t", "У": "u", "Ф": "f", "Х": "x", "Ц": "ts", "Ч": "ch", "Ш": "sh",
    "Ъ": "ʼ", "Ь": "", "Э": "e", "Ю": "yu", "Я": "ya", "Ў": "oʻ", "Қ": "q", "Ғ": "gʻ",
    "Ҳ": "h", "Ы": "i",
}
VOWELS = set("АЕЁИОУЫЭЮЯӘӨҰҮІЎӢӮ")


def translit(table, word, ye=False, lower=False):
    out = []
    prev = None
    for ch in word:
        up = ch.upper()
        if up not in table:
            out.append(ch)
            prev = up
            continue
        latin = table[up]
        if ye and up == "Е" and (prev is None or prev in VOWELS or prev in "ЪЬ"):
            latin = "ye" if lower else "YE"
        out.append(latin)
        prev = up
    s = "".join(out)
    if lower:
        return s[:1].upper() + s[1:]
    return s.upper()


def words(table, name, **kw):
    return " ".join(translit(table, w, **kw) for w in name.split())


# (convention of the national form, national form, other conventions to render)
# Russian/Kazakh/Kyrgyz/Tajik/Uzbek Cyrillic people: surname, given name(s), patronymic or
# None, date of birth or None.
PEOPLE = [
    # Kazakhstan, Kazakh Cyrillic
    ("KK-CYR", "Әбілқасымов", "Нұрлан", "Серікұлы", "1985-04-17"),
    ("KK-CYR", "Өтегенова", "Айгүл", "Маратқызы", None),
    ("KK-CYR", "Нұрғали", "Ғалымжан", None, "1979-11-02"),
    ("KK-CYR", "Серікбаев", "Жақсылық", None, None),
    ("KK-CYR", "Құдайбергенова", "Әсел", "Болатқызы", "1994-09-11"),
    ("KK-CYR", "Жұмабаев", "Қайрат", None, "1972-01-30"),
    ("KK-CYR", "Тоқаев", "Ерлан", "Әбдіұлы", None),
    ("KK-CYR", "Сәрсенбаева", "Гүлнар", None, "1988-06-05"),
    ("KK-CYR", "Оспанов", "Дәулет", None, None),
    ("KK-CYR", "Байжанов", "Асқар", "Нұрланұлы", "1991-03-14"),
    ("KK-CYR", "Мұқанов", "Бауыржан", None, None),
    ("KK-CYR", "Ысқақова", "Мөлдір", None, "2001-12-24"),
    ("KK-CYR", "Шәріпов", "Мұрат", None, None),
    ("KK-CYR", "Әлиев", "Тимур", None, "1983-08-08"),
    ("KK-CYR", "Һашимов", "Рүстем", None, None),
    # Kazakhstan, Russian Cyrillic
    ("RU-CYR", "Иванов", "Тимур", "Сергеевич", "1987-03-02"),
    ("RU-CYR", "Смирнова", "Юлия", "Андреевна", None),
    ("RU-CYR", "Ковалёв", "Дмитрий", None, "1975-05-19"),
    ("RU-CYR", "Щербаков", "Илья", "Петрович", None),
    ("RU-CYR", "Цой", "Виктор", None, "1962-06-21"),
    ("RU-CYR", "Мамедов", "Эльдар", None, None),
    ("RU-CYR", "Ким", "Ольга", "Николаевна", "1990-02-28"),
    ("RU-CYR", "Пак", "Евгений", None, None),
    ("RU-CYR", "Жуков", "Александр", None, "1969-10-10"),
    ("RU-CYR", "Кузнецова", "Наталья", "Викторовна", None),
    # Kyrgyzstan
    ("KY-CYR", "Токтогулова", "Үмүт", None, "1993-07-07"),
    ("KY-CYR", "Асанов", "Бакыт", None, None),
    ("KY-CYR", "Жээнбеков", "Нурбек", None, "1980-01-15"),
    ("KY-CYR", "Осмонова", "Айпери", None, None),
    ("KY-CYR", "Сыдыков", "Эрмек", None, "1977-09-09"),
    ("KY-CYR", "Мамытов", "Бекболот", None, None),
    ("KY-CYR", "Өмүрбекова", "Гүлзат", None, "1995-04-01"),
    ("KY-CYR", "Исаков", "Талант", None, None),
    ("KY-CYR", "Турдубаев", "Нурлан", None, "1986-12-12"),
    ("KY-CYR", "Бөкөнбаев", "Эркин", None, None),
    # Tajikistan
    ("TG-CYR", "Ҷӯраев", "Ҳамид", None, "1984-02-29"),
    ("TG-CYR", "Раҳмонӣ", "Ҷамшед", None, None),
    ("TG-CYR", "Қурбонов", "Сӯҳроб", None, "1990-10-31"),
    ("TG-CYR", "Назаров", "Фарҳод", None, None),
    ("TG-CYR", "Шарипова", "Мадина", None, "1998-03-08"),
    ("TG-CYR", "Саидов", "Баҳром", None, None),
    ("TG-CYR", "Ғафуров", "Умед", None, "1981-07-19"),
    ("TG-CYR", "Ҳакимов", "Парвиз", None, None),
    ("TG-CYR", "Мирзоева", "Нигина", None, "1992-11-11"),
    ("TG-CYR", "Каримзода", "Далер", None, None),
    # Uzbekistan, Uzbek Cyrillic (the Latin form from the 1995 table)
    ("UZ-CYR", "Ғуломов", "Ўткир", None, "1983-05-05"),
    ("UZ-CYR", "Қодиров", "Шерзод", None, None),
    ("UZ-CYR", "Хабибуллаев", "Зафар", None, "1979-09-27"),
    ("UZ-CYR", "Юсупова", "Гулнора", None, None),
    ("UZ-CYR", "Каримов", "Акмал", None, "1988-01-01"),
    ("UZ-CYR", "Тошматов", "Ҳасан", None, None),
    ("UZ-CYR", "Носирова", "Дилноза", None, "1996-08-16"),
    ("UZ-CYR", "Эргашев", "Жасур", None, None),
    ("UZ-CYR", "Умаров", "Азиз", None, "1974-04-04"),
    ("UZ-CYR", "Раҳимова", "Шаҳноза", None, None),
    ("UZ-CYR", "Абдуллаев", "Собир", None, "1980-12-01"),
    ("UZ-CYR", "Мирзаев", "Фаррух", None, None),
    ("UZ-CYR", "Султонова", "Мунира", None, "1999-05-25"),
    ("UZ-CYR", "Ниёзов", "Отабек", None, None),
]

# Turkmen Latin (national) against the Russian Cyrillic of the same person, written by hand.
TURKMEN = [
    ("Çaryýew", "Şöhrat", "Чарыев", "Шохрат", "1985-06-06"),
    ("Annaýewa", "Maral", "Аннаева", "Марал", None),
    ("Berdiýew", "Mergen", "Бердыев", "Мерген", "1978-03-03"),
    ("Öwezow", "Aman", "Овезов", "Аман", None),
    ("Nuriýewa", "Gülşat", "Нуриева", "Гулшат", "1991-09-19"),
    ("Nyýazow", "Sapar", "Ниязов", "Сапар", None),
    ("Gurbanow", "Döwlet", "Гурбанов", "Довлет", "1982-02-02"),
    ("Orazowa", "Jeren", "Оразова", "Джерен", None),
    ("Hojamuhammedow", "Batyr", "Ходжамухаммедов", "Батыр", "1975-07-27"),
    ("Ataýewa", "Ogulgerek", "Атаева", "Огулгерек", None),
    ("Saparow", "Serdar", "Сапаров", "Сердар", "1989-10-20"),
    ("Meredow", "Rahym", "Мередов", "Рахим", None),
]

rows = []


def add(ca, a, cb, b):
    rows.append((ca, a, cb, b, SRC.get(cb, SRC.get(ca))))


for conv, sur, giv, pat, dob in PEOPLE:
    d = f" {dob}" if dob else ""
    ddmm = ""
    if dob:
        y, m, dd = dob.split("-")
        ddmm = f" {dd}.{m}.{y}"
    native = f"{sur} {giv}"
    if conv == "UZ-CYR":
        lat = f"{words(UZ, sur, ye=True, lower=True)} {words(UZ, giv, ye=True, lower=True)}"
        add(conv, native + ddmm, "UZ-LAT", lat + d)
        add(conv, native, "ICAO", words(ICAO, native))
        add("UZ-LAT", lat, "MRZ", f"{words(ICAO, sur)}<<{words(ICAO, giv)}<<<<<")
        add(conv, native + d, "SWAP", f"{giv} {sur}{d}")
        add("UZ-LAT", f"{lat} Rustam oʻgʻli", "NOPAT", words(ICAO, native))
    elif conv == "KK-CYR":
        add(conv, native + ddmm, "KZ-PASS", words(KZ, native) + d)
        add(conv, native, "ICAO", words(ICAO, native))
        add(conv, native + d, "SWAP", f"{words(KZ, giv)} {words(KZ, sur)}{d}")
        add(conv, native, "MRZ", f"{words(ICAO, sur)}<<{words(ICAO, giv)}<<<<")
        if pat:
            add(conv, f"{sur} {giv} {pat}{ddmm}", "NOPAT", words(KZ, native) + d)
    elif conv == "KY-CYR":
        add(conv, native + ddmm, "KG-PASS", words(KG, native) + d)
        add(conv, native, "SWAP", f"{words(KG, giv)} {words(KG, sur)}")
        add(conv, native, "MRZ", f"{words(ICAO, sur)}<<{words(ICAO, giv)}<<<<")
        add(conv, f"{sur} {giv} Асан уулу", "NOPAT", words(KG, native))
    elif conv == "TG-CYR":
        add(conv, native + ddmm, "TG-LAT", words(TG, native) + d)
        add(conv, native, "ICAO", words(ICAO, native))
        add(conv, native + d, "SWAP", f"{words(TG, giv)} {words(TG, sur)}{d}")
        add(conv, native, "MRZ", f"{words(ICAO, sur)}<<{words(ICAO, giv)}<<<<")
    else:  # RU-CYR
        add(conv, native + ddmm, "ICAO", words(ICAO, native) + d)
        add(conv, native, "KZ-PASS", words(KZ, native))
        add(conv, native + d, "SWAP", f"{words(ICAO, giv)} {words(ICAO, sur)}{d}")
        add(conv, native, "MRZ", f"{words(ICAO, sur)}<<{words(ICAO, giv)}<<<<")
        if pat:
            add(conv, f"{sur} {giv} {pat}{ddmm}", "NOPAT", words(ICAO, native) + d)
            add(conv, f"{giv} {pat} {sur}", "NOPAT", words(KZ, native))

for tsur, tgiv, rsur, rgiv, dob in TURKMEN:
    d = f" {dob}" if dob else ""
    add("TM-LAT", f"{tsur} {tgiv}{d}", "RU-CYR", f"{rsur} {rgiv}{d}")
    add("TM-LAT", f"{tsur} {tgiv}", "SWAP", f"{tgiv} {tsur}")
    add("RU-CYR", f"{rsur} {rgiv}", "ICAO", words(ICAO, f"{rsur} {rgiv}"))

print("# One person as two states' documents write them; every pair must blind alike.")
print("# Generated by scripts/name_pairs.py (national forms by hand, the others by the")
print("# convention named in column 5). Columns: convention-a, form-a, convention-b, form-b,")
print("# source of convention-b. Conventions: RU-CYR Russian Cyrillic; KK/KY/TG/UZ-CYR Kazakh,")
print("# Kyrgyz, Tajik, Uzbek Cyrillic; ICAO and MRZ Doc 9303 Latin; KZ/KG-PASS, TG-LAT, UZ-LAT,")
print("# TM-LAT national Latin; SWAP order swapped; NOPAT without the patronymic.")
for r in rows:
    print("\t".join(r))
