"""Word knowledge: publisher names in a question, by words and by acronym."""

import pytest

from rag.words import acronym_of, content_tokens, mentioned, names_publisher, passage_tokens


@pytest.mark.parametrize(
    "question, source, named",
    [
        ("What did Reuters report about the talks?", "Reuters", True),
        ("What did AFP report?", "Agence France-Presse", True),  # acronym -> long form
        ("According to Agence France-Presse, who spoke?", "AFP", True),  # long form -> acronym
        ("According to PTI, who met?", "Press Trust of India", True),  # "of" is no initial
        ("Who did the Prime Minister meet?", "Press Trust of India", False),
        ("What did The Verge say?", "TechCrunch", False),
        ("What did the Coastal Commission decide?", "Capital Courier", False),  # two long forms
        ("What did the ministry say?", None, False),
        ("What did usatoday report?", "www.usatoday.com", True),
    ],
)
def test_a_question_names_its_publisher(question, source, named):
    assert names_publisher(question, source) is named


def test_acronyms_need_two_capitalised_words():
    assert acronym_of("Agence France-Presse") == "AFP"
    assert acronym_of("Reuters") == ""
    assert acronym_of("the daily news") == ""


@pytest.mark.parametrize("question, parts", [
    ("Who chaired the 2019 inquiry, and who chairs the 2024 one?",
     ["Who chaired the 2019 inquiry", "who chairs the 2024 one"]),
    ("Which club signed him and how much did it pay?", ["Which club signed him", "how much did it pay"]),
    ("How many homes flooded in 2021 and in 2023?", ["How many homes flooded in 2021", "in 2023"]),
    ("What was the mayor's stance in 2020 compared with 2022?", ["What was the mayor's stance in 2020", "2022"]),
    ("What did the council and the union agree?", ["What did the council and the union agree?"]),  # joins words
    # the same ask of two years: one part per year, the other year left out
    ("Where did the 2019 flood and the 2023 flood start?",
     ["Where did the 2019 flood and the  flood start?", "Where did the  flood and the 2023 flood start?"]),
    ("Who won the 2019 race?", ["Who won the 2019 race?"]),
    ("Who won?", ["Who won?"]),
])
def test_a_question_that_asks_two_things_splits_into_its_asks(question, parts):
    from rag.words import question_parts

    assert question_parts(question) == parts


@pytest.mark.parametrize(
    "word, article, found",
    [
        ("Nairobi", "Kenyan officials said the talks would resume.", True),  # capital for country
        ("Moscow", "Russia denied the report.", True),
        ("Washington", "The US urged restraint.", True),  # a country of several words by its initials
        ("Washington", "The United States urged restraint.", True),
        ("Ukraine", "Officials in Kyiv said the grid held.", True),  # country for capital
        ("Nairobi", "Uganda said the talks would resume.", False),  # another country's capital
        ("City", "Mexico said the talks would resume.", False),  # "Mexico City": "City" is no capital's own word
        ("Valley", "Anguilla said the talks would resume.", False),  # territories ("The Valley"): left out
    ],
)
def test_a_place_is_mentioned_by_its_capital_or_its_country(word, article, found):
    (token,) = content_tokens(word)
    assert mentioned(token, passage_tokens(article)) is found


def test_a_claim_still_needs_the_articles_own_name():
    """Metonymy matches questions to articles; a claim an answer makes is held to the cited
    source's own names (rag.citations), so a capital the source never names sinks it."""
    from rag.citations import support_score

    source = "Officials in Kenya said the talks would resume."
    assert support_score("Officials in Kenya said the talks would resume.", source) == 1.0
    assert support_score("Officials in Nairobi said the talks would resume.", source) == 0.0
