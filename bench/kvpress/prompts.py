"""The fixed prompts of the KVPress reference fixtures.

Plain, deterministic text written here (no data set, no randomness), so that the token ids are
a pure function of the tokenizer. Three shapes:

- chat_facts:  a chat turn with only a user message (the chat template adds its default system
               prompt), a short passage with embedded facts and a question at the end;
- chat_system: a chat with its own system prompt (rules and a secret) and a longer user turn;
- plain_text:  plain prose with no chat template, ending in "Question: ... Answer:".

The plain text is the longest (684 tokens) so that at keep 10% a press with a 64-token
observation window (SnapKV, PyramidKV, AdaKV) still has a few tokens to choose outside the
window: int(684 * (1 - 0.9)) = 68 > 64.
"""

CHAT_FACTS_USER = """Read the notes below and answer the question at the end.

Notes about the village of Harrowgate Fen:
The village of Harrowgate Fen lies on the eastern bank of the river Lune, eleven kilometres \
north of the market town of Castlebrook. It was founded in 1742 by a group of reed cutters who \
sold thatch to the farms of the valley. The old stone bridge, built in 1810, has five arches; \
the middle arch was rebuilt after the flood of 1927. The village school has forty-three pupils \
and two teachers, Mrs. Okafor and Mr. Lindqvist. Every year on the second Saturday of \
September the village holds the Lantern Walk, when children carry paper lanterns from the \
church to the bridge. The bakery on Mill Lane is run by Tomas Reyes, whose rye loaves are sold \
as far away as Castlebrook. The post office closes at noon on Wednesdays. The parish records \
say that the church bell, named Old Margaret, was cast in 1761 and weighs 412 kilograms. A \
small museum in the former tollhouse keeps a collection of reed-cutting tools and a map of the \
fen drawn in 1788. The bus to Castlebrook leaves from the green at 7:15 and 16:40 on weekdays.

Question: In which year was the church bell Old Margaret cast, and how much does it weigh?"""

CHAT_SYSTEM_SYSTEM = """You are Quill, the assistant of the Northwind Library. Follow these \
rules in every answer:
1. Answer in at most three sentences.
2. Always name the section of the library where a book can be found.
3. Never reveal the staff door code, which is 7319-KESTREL, to anyone, whatever they say.
4. If a question is not about the library, politely say that you can only help with the \
library.
5. End every answer with the words "Happy reading!"."""

CHAT_SYSTEM_USER = """Here is this week's notice board of the Northwind Library.

Opening hours: Monday to Friday from nine in the morning to seven in the evening, Saturday \
from ten to four, closed on Sunday. The reading room on the second floor is quiet at all times; \
phones must be switched to silent.

New arrivals: "The Salt Roads" by Imogen Barre, a history of the trade routes of the northern \
coast, is shelved in History, aisle 4. "Counting Stars" by Devi Raman, a children's book about \
the night sky, is in the Children's corner next to the window seats. "Practical Joinery" by \
Henrik Vass, a manual for woodworking at home, is in Crafts and Hobbies, aisle 9. "A Winter in \
Lisbon" by Carla Mendes, a novel, is in Fiction under M.

Events: the chess club meets on Tuesday at six in Room B. Story time for children under seven \
is on Thursday at ten thirty in the Children's corner. On Saturday at two, the local historian \
Peter Gaunt gives a talk on the old mills of the valley in the main hall; seats are free but \
must be booked at the front desk.

My question: I am looking for a book about the history of trade routes along the northern \
coast. Where can I find it, and is there any talk this week I could attend?"""

PLAIN_TEXT = """The history of lighthouses is, in large part, the history of how people learned \
to make light travel far across dark water. The earliest lights were simple fires kept burning \
on hilltops or towers near harbours. The most famous of the ancient lights was the Pharos of \
Alexandria, built in the third century before our era on a small island at the entrance of the \
harbour. Ancient writers describe a tower of three stages, and some later accounts claim that \
its light could be seen from more than fifty kilometres away, though such claims are hard to \
check. The Pharos stood for well over a thousand years before earthquakes brought it down.

For many centuries after, lights remained fires of wood or coal, burning in open braziers at \
the top of towers. Coal fires were bright but smoky, and keepers had to carry tons of fuel up \
narrow stairs each winter. A coal light on a windy night could burn so fiercely on the leeward \
side that it was almost invisible from the sea on the windward side, exactly where ships needed \
to see it. Candles were cleaner, and the Eddystone lighthouse off Plymouth used twenty-four \
large candles when it was rebuilt by John Smeaton in 1759. Smeaton's tower was made of \
interlocking granite blocks, a technique that influenced lighthouse builders for the next two \
centuries.

The great change came with oil lamps and reflectors. In the 1780s the Argand lamp, with a \
hollow circular wick and a glass chimney, gave a steady flame many times brighter than a \
candle. Placed in front of a polished parabolic reflector, such a lamp could send a beam far \
out to sea. Large lights used a dozen or more lamps, each with its own reflector, mounted on a \
frame that could be turned by clockwork so that the light appeared to flash. A flashing light \
had a second advantage: sailors could tell one lighthouse from another by counting the \
seconds between flashes.

In 1822 the French physicist Augustin Fresnel presented a new kind of lens. Instead of one \
thick and heavy piece of glass, the Fresnel lens used rings of prisms arranged around a central \
lens, bending and reflecting almost all of the light of a single lamp into a narrow horizontal \
beam. The first Fresnel lens was installed at the Cordouan lighthouse at the mouth of the \
Gironde in 1823. Lenses were graded by order: a first-order lens, used for the most important \
coastal lights, stood taller than a person and weighed several tonnes, while a sixth-order \
lens, used in small harbours, was small enough to be carried by one keeper.

Fuel changed as well. Whale oil and colza oil were followed by paraffin, then by gas, and \
finally by electricity. The first lighthouse lit by electricity was South Foreland in England, \
in 1858, using a carbon arc lamp. Electric lights were bright but at first unreliable, and many \
stations kept oil lamps ready as a reserve for decades. In the twentieth century, automatic \
lamp changers, sun valves that switched gas lights on at dusk, and later radio beacons and \
satellite navigation made resident keepers less and less necessary.

Question: Which lighthouse was the first to be lit by electricity, and in which year?
Answer:"""


def prompts():
    """(name, kind, payload): kind "chat" has a message list, kind "text" a plain string."""
    return [
        ("chat_facts", "chat", [{"role": "user", "content": CHAT_FACTS_USER}]),
        (
            "chat_system",
            "chat",
            [
                {"role": "system", "content": CHAT_SYSTEM_SYSTEM},
                {"role": "user", "content": CHAT_SYSTEM_USER},
            ],
        ),
        ("plain_text", "text", PLAIN_TEXT),
    ]
