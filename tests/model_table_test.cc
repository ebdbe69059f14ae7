// detail::ModelTable: lock-free lookups by name and by dense index, growth, and writers racing
// readers.
#include "core/model_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ratelimit::detail {
namespace {

using namespace std::string_view_literals;

struct Item {
  Item(std::string name_in, std::size_t hash_in, std::uint32_t index_in, int payload_in = 0)
      : name(std::move(name_in)), hash(hash_in), index(index_in), payload(payload_in) {}
  const std::string name;
  const std::size_t hash;
  const std::uint32_t index;
  const int payload;
};

using Table = ModelTable<Item>;

// A `make` that counts its calls and checks what it is given.
struct Maker {
  std::atomic<int>* calls;
  int payload = 0;
  std::shared_ptr<Item> operator()(std::string name, std::size_t hash, std::uint32_t index) const {
    calls->fetch_add(1, std::memory_order_relaxed);
    EXPECT_EQ(hash, Table::hash_of(name));
    return std::make_shared<Item>(std::move(name), hash, index, payload);
  }
};

Item* add(Table& table, std::string_view name) {
  return table.find_or_add(name, [](std::string n, std::size_t h, std::uint32_t i) {
    return std::make_shared<Item>(std::move(n), h, i);
  });
}

TEST(ModelTableTest, FindBeforeAndAfterAdd) {
  Table table;
  std::atomic<int> calls{0};
  EXPECT_EQ(table.find("gpt"), nullptr);
  Item* gpt = table.find_or_add("gpt", Maker{&calls, 7});
  ASSERT_NE(gpt, nullptr);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(gpt->name, "gpt");
  EXPECT_EQ(gpt->hash, Table::hash_of("gpt"));
  EXPECT_EQ(gpt->index, 0u);
  EXPECT_EQ(gpt->payload, 7);
  EXPECT_EQ(table.find("gpt"), gpt);
  // A second find_or_add finds it and does not call make.
  EXPECT_EQ(table.find_or_add("gpt", Maker{&calls, 8}), gpt);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(gpt->payload, 7);
  // Found by a view into a different buffer with the same bytes.
  const std::string copy = "xgptx";
  EXPECT_EQ(table.find(std::string_view(copy).substr(1, 3)), gpt);
}

TEST(ModelTableTest, NeverAddedNamesAreNull) {
  Table table;
  for (int i = 0; i < 100; ++i) add(table, "model-" + std::to_string(i));
  EXPECT_EQ(table.find("model-100"), nullptr);
  EXPECT_EQ(table.find("model-"), nullptr);
  EXPECT_EQ(table.find("model-1 "), nullptr);
  EXPECT_EQ(table.find("MODEL-1"), nullptr);
  EXPECT_EQ(table.find(""), nullptr);
  EXPECT_EQ(table.find("model-10\0"sv), nullptr);
}

TEST(ModelTableTest, EmptyNameIsAnOrdinaryName) {
  Table table;
  EXPECT_EQ(table.find(""), nullptr);
  Item* a = add(table, "a");
  Item* empty = add(table, "");
  ASSERT_NE(empty, nullptr);
  EXPECT_NE(empty, a);
  EXPECT_EQ(empty->name, "");
  EXPECT_EQ(empty->index, 1u);
  EXPECT_EQ(table.find(""), empty);
  EXPECT_EQ(table.find("\0"sv), nullptr);  // one NUL byte is another name
  Item* nul = add(table, "\0"sv);
  EXPECT_NE(nul, empty);
  EXPECT_EQ(nul->name.size(), 1u);
  EXPECT_EQ(table.find(""), empty);
  EXPECT_EQ(table.find("\0"sv), nul);
}

TEST(ModelTableTest, NamesThatDifferOnlyInTheLastByte) {
  Table table;
  std::vector<std::string> names;
  for (int b = 0; b < 256; ++b) names.push_back("gemini-2.0-flash" + std::string(1, char(b)));
  // Prefixes of one another, too.
  for (int n = 1; n <= 20; ++n) names.push_back(std::string(n, 'a'));
  std::vector<Item*> items;
  for (const auto& name : names) items.push_back(add(table, name));
  for (std::size_t i = 0; i < names.size(); ++i) {
    ASSERT_NE(items[i], nullptr);
    EXPECT_EQ(items[i]->index, i);
    EXPECT_EQ(table.find(names[i]), items[i]) << "name " << i;
    EXPECT_EQ(items[i]->name, names[i]);
  }
  EXPECT_EQ(table.find("gemini-2.0-flash"), nullptr);  // without the last byte
  EXPECT_EQ(table.find(std::string(21, 'a')), nullptr);
}

TEST(ModelTableTest, AtIndexForEveryIndexHandedOutAndNullOtherwise) {
  Table table;
  EXPECT_EQ(table.at_index(0), nullptr);  // nothing handed out yet
  constexpr int kCount = 500;             // spans the first segments (64, 128, 256 entries)
  std::vector<Item*> items;
  for (int i = 0; i < kCount; ++i) items.push_back(add(table, "m" + std::to_string(i)));
  for (int i = 0; i < kCount; ++i) {
    EXPECT_EQ(table.at_index(i), items[i]) << i;
    EXPECT_EQ(items[i]->index, static_cast<std::uint32_t>(i));
  }
  // Indices never handed out: inside the last allocated segment, past it, and far beyond.
  for (std::uint64_t i :
       {std::uint64_t{kCount}, std::uint64_t{kCount + 1}, std::uint64_t{959}, std::uint64_t{960},
        std::uint64_t{1} << 20, std::uint64_t{1} << 32,
        std::uint64_t{64} * ((std::uint64_t{1} << 26) - 1) - 1,
        std::uint64_t{64} * ((std::uint64_t{1} << 26) - 1), UINT64_MAX - 1, UINT64_MAX}) {
    EXPECT_EQ(table.at_index(i), nullptr) << i;
  }
}

TEST(ModelTableTest, SegmentBoundaries) {
  Table table;
  // Segment s holds [64·(2^s − 1), 64·(2^(s+1) − 1)): the boundaries are 64, 192, 448, 960.
  for (int i = 0; i < 961; ++i) {
    add(table, "b" + std::to_string(i));
    for (std::uint64_t edge : {63, 64, 191, 192, 447, 448, 959, 960}) {
      Item* at = table.at_index(edge);
      if (edge <= static_cast<std::uint64_t>(i)) {
        ASSERT_NE(at, nullptr) << "after " << i << ", index " << edge;
        EXPECT_EQ(at->index, edge);
        EXPECT_EQ(at->name, "b" + std::to_string(edge));
      } else {
        EXPECT_EQ(at, nullptr) << "after " << i << ", index " << edge;
      }
    }
  }
}

TEST(ModelTableTest, GrowsPastManyResizes) {
  Table table;
  constexpr int kCount = 50'000;  // from 16 slots to 131072: 13 resizes
  std::vector<Item*> items;
  items.reserve(kCount);
  for (int i = 0; i < kCount; ++i) {
    items.push_back(add(table, "models/gemini-" + std::to_string(i)));
    // A name added before a resize is still found after it.
    if ((i & (i - 1)) == 0) {
      for (int j = 0; j <= i; j += std::max(1, i / 16)) {
        ASSERT_EQ(table.find("models/gemini-" + std::to_string(j)), items[j]) << i << " " << j;
      }
    }
  }
  for (int i = 0; i < kCount; ++i) {
    const std::string name = "models/gemini-" + std::to_string(i);
    ASSERT_EQ(table.find(name), items[i]) << name;
    ASSERT_EQ(table.at_index(i), items[i]) << i;
    ASSERT_EQ(items[i]->index, static_cast<std::uint32_t>(i));
  }
  for (int i = kCount; i < kCount + 1000; ++i) {
    ASSERT_EQ(table.find("models/gemini-" + std::to_string(i)), nullptr);
  }
  EXPECT_EQ(table.at_index(kCount), nullptr);
  EXPECT_EQ(table.all().size(), static_cast<std::size_t>(kCount));
}

TEST(ModelTableTest, AllIsInInsertionOrderAndACopy) {
  Table table;
  EXPECT_TRUE(table.all().empty());
  const std::vector<std::string> names = {"zeta", "alpha", "", "mid", "beta"};
  for (const auto& name : names) add(table, name);
  add(table, "alpha");  // found again: not added twice
  auto all = table.all();
  ASSERT_EQ(all.size(), names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(all[i]->name, names[i]);
    EXPECT_EQ(all[i]->index, i);
    EXPECT_EQ(all[i].get(), table.find(names[i]));
  }
  add(table, "later");
  EXPECT_EQ(all.size(), names.size());  // the earlier copy is unchanged
  EXPECT_EQ(table.all().size(), names.size() + 1);
  EXPECT_EQ(table.all().back()->name, "later");
}

TEST(ModelTableTest, TheTableOwnsItsEntries) {
  std::weak_ptr<Item> watched;
  {
    Table table;
    table.find_or_add("owned", [&](std::string n, std::size_t h, std::uint32_t i) {
      auto item = std::make_shared<Item>(std::move(n), h, i);
      watched = item;
      return item;
    });
    EXPECT_FALSE(watched.expired());  // make's shared_ptr is gone; the table keeps it
    EXPECT_EQ(table.find("owned"), watched.lock().get());
  }
  EXPECT_TRUE(watched.expired());
}

TEST(ModelTableTest, HashIsStableAndSpreads) {
  EXPECT_EQ(Table::hash_of("gpt"), Table::hash_of(std::string("gpt")));
  EXPECT_NE(Table::hash_of("a"), Table::hash_of("b"));
  EXPECT_NE(Table::hash_of(""), Table::hash_of("\0"sv));
  // The low bits (the slot) differ for names that differ only in the last byte.
  std::vector<std::size_t> low;
  for (int b = 0; b < 256; ++b) low.push_back(Table::hash_of("m" + std::string(1, char(b))) & 1023);
  std::sort(low.begin(), low.end());
  const auto distinct = std::unique(low.begin(), low.end()) - low.begin();
  EXPECT_GT(distinct, 180);  // ~226 expected for random values in 1024 slots
}

TEST(ModelTableTest, HashSeesEveryByteAndTheLength) {
  // Every length the word-at-a-time paths take (0, 1-3, 4-7, 8-16, longer with a tail), and
  // a change to any one byte changes the hash.
  std::set<std::size_t> seen;
  for (std::size_t n = 0; n <= 70; ++n) {
    std::string name(n, 'a');
    for (std::size_t i = 0; i < n; ++i) name[i] = static_cast<char>('a' + (i * 7) % 26);
    const std::size_t h = Table::hash_of(name);
    EXPECT_TRUE(seen.insert(h).second) << "length " << n;
    for (std::size_t i = 0; i < n; ++i) {
      std::string flipped = name;
      flipped[i] = static_cast<char>(flipped[i] ^ 0x20);
      EXPECT_NE(Table::hash_of(flipped), h) << "length " << n << ", byte " << i;
    }
  }
  // Trailing zero bytes count (the length is hashed).
  EXPECT_NE(Table::hash_of("gpt"sv), Table::hash_of("gpt\0"sv));
  EXPECT_NE(Table::hash_of("gpt-4o\0\0"sv), Table::hash_of("gpt-4o\0\0\0"sv));
}

TEST(ModelTableTest, ConcurrentWritersAndReadersAgree) {
  Table table;
  constexpr int kWriters = 4;
  constexpr int kReaders = 2;
  constexpr int kNames = 4000;
  constexpr int kPerWriter = 1600;  // writer w adds [w·800, w·800 + 1600): overlapping halves
  std::vector<std::string> names;
  for (int i = 0; i < kNames; ++i) names.push_back("model/" + std::to_string(i));

  std::atomic<int> calls{0};
  std::atomic<bool> writers_done{false};
  std::atomic<int> ready{0};
  std::vector<std::map<std::string, Item*>> seen(kWriters);
  std::vector<std::string> reader_errors(kReaders);

  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::vector<int> order;
      for (int i = w * 800; i < w * 800 + kPerWriter; ++i) order.push_back(i % kNames);
      std::shuffle(order.begin(), order.end(), std::mt19937(w));
      ready.fetch_add(1);
      while (ready.load() < kWriters + kReaders) std::this_thread::yield();
      for (int i : order) {
        Item* item = table.find_or_add(names[i], Maker{&calls});
        seen[w][names[i]] = item;
      }
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      std::vector<Item*> first(kNames, nullptr);
      ready.fetch_add(1);
      while (ready.load() < kWriters + kReaders) std::this_thread::yield();
      std::string& error = reader_errors[r];
      bool last_round = false;
      while (error.empty()) {
        last_round = writers_done.load(std::memory_order_acquire);
        for (int i = 0; i < kNames && error.empty(); ++i) {
          Item* item = table.find(names[i]);
          if (item == nullptr) continue;
          if (item->name != names[i]) error = "find(" + names[i] + ") gave " + item->name;
          if (first[i] != nullptr && first[i] != item) error = names[i] + " changed entry";
          first[i] = item;
          if (table.at_index(item->index) != item) error = names[i] + ": at_index disagrees";
        }
        if (last_round) break;
      }
    });
  }
  for (int w = 0; w < kWriters; ++w) threads[w].join();
  writers_done.store(true, std::memory_order_release);
  for (int r = 0; r < kReaders; ++r) threads[kWriters + r].join();
  for (const auto& error : reader_errors) EXPECT_EQ(error, "");

  // Writers covered [0, 4000) with overlaps: each name maps to exactly one entry, made once.
  const auto all = table.all();
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kNames));
  EXPECT_EQ(calls.load(), kNames);
  std::vector<bool> index_seen(kNames, false);
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i]->index, i);  // dense, in insertion order
    EXPECT_EQ(table.at_index(i), all[i].get());
    index_seen[all[i]->index] = true;
  }
  EXPECT_TRUE(std::all_of(index_seen.begin(), index_seen.end(), [](bool b) { return b; }));
  EXPECT_EQ(table.at_index(kNames), nullptr);
  for (const auto& name : names) {
    Item* item = table.find(name);
    ASSERT_NE(item, nullptr) << name;
    EXPECT_EQ(item->name, name);
    for (int w = 0; w < kWriters; ++w) {
      auto it = seen[w].find(name);
      if (it != seen[w].end()) {
        EXPECT_EQ(it->second, item) << name << " writer " << w;
      }
    }
  }
}

}  // namespace
}  // namespace ratelimit::detail
