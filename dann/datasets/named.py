"""What the field's named datasets share: domains and classes known in advance, archives
downloaded from where their authors (or a reference library) publish them, and, for VisDA-2017
and DomainNet, the images read from the published lists (`<path> <label>` per line).

`NamedFolder` is a `Folder` whose domains, classes and archives are known (Office-31,
Office-Home); `ImageListDataset` reads each domain's images from its list files instead of
the class folders (VisDA-2017, DomainNet). Both download into the default folder, or into
--data_root with --download, and check what they extract before moving it into place.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from dann.datasets.folder import DomainFiles, Folder, class_root, list_domain
from dann.downloads import Remote, download_archive, download_file
from dann.errors import UserError, warn


class NamedFolder(Folder):
    """A folder dataset with known domains (`DOMAINS`), classes (`CLASSES`, in label order) and
    one archive per domain (`ARCHIVES`)."""

    title = ""  # the dataset's name in messages
    DOMAINS: tuple[str, ...] = ()
    CLASSES: tuple[str, ...] = ()
    ARCHIVES: dict[str, Remote] = {}

    def domains(self) -> list[str]:
        if not self.root.exists() and not self.may_download:
            raise UserError(f"--data_root {self.root}: no such folder; give the folder that holds {self.title}'s "
                            f"domain folders, or add --download to download {self.title} into it")
        return list(self.DOMAINS)

    def prepare(self, domains: list[str]) -> None:
        for domain in domains:
            if not (self.root / self.folder_of(domain)).is_dir():
                self.fetch_archive(domain, self.root / self.folder_of(domain))

    def classes(self, domains: list[str]) -> list[str]:
        found = super().classes(domains)
        problem = class_problem(found, self.CLASSES, self.title)
        if problem:
            raise UserError(f"{self.root}: {problem}; this is not {self.title} as distributed (use --dataset folder "
                            f"for other class folders)")
        return found

    def check_extracted(self, tree: Path, domain: str) -> str | None:
        """What is wrong with an extracted archive of `domain`, or None."""
        if not (tree / domain).is_dir():
            return no_folder(tree, domain)
        try:
            return class_problem(list_domain(tree, domain).classes, self.CLASSES, self.title)
        except UserError as e:  # an empty class folder, say
            return str(e).split(";")[0]

    def fetch_archive(self, domain: str, wanted: Path) -> None:
        """Download and extract the archive of `domain`, which holds `wanted` (absent now)."""
        remote = self.ARCHIVES[domain]
        fix = (f"download {remote.url} by hand and extract it into {self.root}, or give --data_root the folder "
               f"that holds {self.title}'s {domain}/")
        if not self.may_download:
            raise UserError(f"{wanted} not found; extract {self.title}'s {domain} archive ({remote.url}, "
                            f"{remote.describe()}) into {self.root}, or add --download to download it there")
        download_archive(remote, self.root, f"{self.title} {domain}", fix,
                         check=lambda tree: self.check_extracted(tree, domain))


def no_folder(tree: Path, domain: str) -> str:
    return f"no {domain}/ folder at its top (found: {', '.join(p.name for p in tree.iterdir()) or 'nothing'})"


def class_problem(found: list[str], expected: tuple[str, ...], title: str) -> str | None:
    """How the class folders `found` differ from the dataset's classes, or None."""
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if not missing and not extra:
        return None
    return (f"{len(found)} class folders where {title} has {len(expected)} (missing: {', '.join(missing[:5]) or 'none'}"
            f"{' ...' if len(missing) > 5 else ''}; not {title}'s: {', '.join(extra[:5]) or 'none'}"
            f"{' ...' if len(extra) > 5 else ''})")


class ImageListDataset(NamedFolder):
    """A named dataset whose domains' images and labels are read from list files, one per domain
    (transductive) or one per domain and split (`list_file`)."""

    def list_file(self, domain: str, split: str) -> Path:
        raise NotImplementedError

    def image_roots(self, domain: str) -> list[Path]:
        """The folders a list's paths may be relative to, in order."""
        return [self.root]

    def listing(self, name: str, split: str = "train") -> DomainFiles:
        key = "" if self.transductive else split  # transductive: one list serves every split
        if (name, key) not in self._listings:
            list_file = self.list_file(name, split)
            paths, labels, missing = present(*read_image_list(list_file, self.image_roots(name), self.CLASSES))
            if missing and not self.config.skip_bad_images:
                raise UserError(f"{len(missing)} images listed in {list_file} are missing, e.g. {missing[0]}; the "
                                f"download is incomplete: delete {self.root / name} to download it again, or pass "
                                f"--skip_bad_images to train without them")
            if missing:
                warn(f"--skip_bad_images: leaving out {len(missing)} missing image(s) of {name}, e.g. {missing[0]}")
            self._listings[name, key] = DomainFiles(name, list(self.CLASSES), paths, labels, split=key,
                                                    skipped=[str(p) for p in missing])
        return self._listings[name, key]

    def classes(self, domains: list[str]) -> list[str]:
        for domain in domains:  # every list read and checked before anything is decoded
            for split in ("train",) if self.transductive else ("train", "test"):
                self.listing(domain, split)
        return list(self.CLASSES)

    def check_extracted(self, tree: Path, domain: str) -> str | None:
        """The domain's folder, holding class folders of the dataset's only (the lists say
        which images count, so a class without images is no error here)."""
        if not (tree / domain).is_dir():
            return no_folder(tree, domain)
        found = [p.name for p in class_root(tree / domain).iterdir() if p.is_dir()]
        if not found or set(found) - set(self.CLASSES):
            return class_problem(found, self.CLASSES, self.title)
        return None


def read_image_list(list_file: Path, roots: list[Path], classes: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The images and labels of a list file: `<relative path> <label>` per line, labels indexing
    `classes`, each image inside a folder named after its class. Paths are relative to the first
    of `roots` that holds the first listed image."""
    if not list_file.is_file():
        raise UserError(f"image list {list_file} not found; check --data_root")
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or not words[-1].isdigit():
            raise damaged(list_file, f"line {number} is not '<path> <label>': {line.strip()[:60]!r}")
        path, label = " ".join(words[:-1]), int(words[-1])
        if label >= len(classes):
            raise damaged(list_file, f"line {number}: label {label}, but there are {len(classes)} classes")
        if classes[label] not in PurePosixPath(path).parts[:-1]:
            raise damaged(list_file, f"line {number}: {path} has label {label} ({classes[label]}) but is not in a "
                                     f"{classes[label]}/ folder")
        entries.append((path, label))
    if not entries:
        raise damaged(list_file, "it lists no images")
    base = next((root for root in roots if (root / entries[0][0]).exists()), None)
    if base is None:
        raise UserError(f"{list_file} lists {entries[0][0]}, which is in none of {', '.join(map(str, roots))}; "
                        f"check --data_root")
    return [base / path for path, _ in entries], [label for _, label in entries]


def present(paths: list[Path], labels: list[int]) -> tuple[list[Path], list[int], list[Path]]:
    """(the listed files that exist, their labels, the missing ones)."""
    keep = [i for i, path in enumerate(paths) if path.exists()]
    if len(keep) == len(paths):
        return paths, labels, []
    kept = set(keep)
    return [paths[i] for i in keep], [labels[i] for i in keep], [p for i, p in enumerate(paths) if i not in kept]


def damaged(list_file: Path, reason: str) -> UserError:
    return UserError(f"{list_file} is damaged ({reason}); replace it with the list the dataset publishes")


def fetch_list(dataset: NamedFolder, remote: Remote, target: Path, what: str) -> None:
    """Download one list file of `dataset` to `target`, if downloads are allowed."""
    if not dataset.may_download:
        raise UserError(f"{target} not found; download {remote.url} there, or add --download to download it")
    download_file(remote, target, f"{dataset.title} {what}", f"download {remote.url} by hand to {target}")
